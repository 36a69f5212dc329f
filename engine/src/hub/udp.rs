//! The hub's UDP sessions of one connected edge: one connected UDP socket per session towards
//! `targetHost:<public port>`, the PROXY v2 DGRAM header in front of the first datagram (or of
//! every one; or of none where the port's PROXY choice is `none`), replies back through the
//! tunnel, idle expiry on both sides.
//!
//! The table belongs to the edge's session task; each session's reply reader is its own task
//! and reports activity through an atomic timestamp, so the table stays single-owner.
//!
//! Sessions are cheap and bounded, whatever the edge sends (it may be compromised): a session
//! holds its socket and a small task but no receive buffer (replies land in a per-thread
//! scratch buffer); an edge keeps at most its `maxUdpSessions` (least recently used closed
//! first), and all edges together at most the hub's UDP budget, which leaves half of the
//! descriptors to TCP streams and edge logins, and which edges share fairly
//! ([`crate::fair_share`]).

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use remoteingress_ipc_schema::{PortProtocol, UdpProxyHeaderMode};
use tokio::net::UdpSocket;
use tokio::task::AbortHandle;

use crate::config::EdgeLimitSettings;
use crate::fair_share::{Budget, HeldSession, Holding, RECLAIM_PATIENCE};
use crate::fd_limit::{BudgetPermit, Full};
use crate::hub::forward::ForwardContext;
use crate::limited_warn;
use crate::metrics::{UdpSessionCount, UdpStats};
use crate::proxy_protocol::{choice, v2, ProxyHeader, ProxyTransport};
use crate::transport::datagram::{UdpMessage, MAX_UDP_PAYLOAD};
use crate::transport::tunnel::Tunnel;
use crate::udp::session::{Evicted, Eviction, SessionTable, TableLimits};

/// Kernel buffers of the per-session sockets.
const SOCKET_BUFFER: usize = 1 << 20;

thread_local! {
    /// The receive buffer of every reply reader on this runtime thread: a waiting session holds
    /// no buffer of its own, and each reply is copied out at its own size.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; MAX_UDP_PAYLOAD + 1]);
}

/// One session towards the target.
#[derive(Debug)]
struct Session {
    socket: Arc<UdpSocket>,
    /// The PROXY v2 DGRAM header for the target; `None` when the port sends bare datagrams.
    header: Option<Bytes>,
    header_sent: bool,
    reader: AbortHandle,
    /// Milliseconds since `HubUdp::epoch` of the last reply from the target.
    last_reply_ms: Arc<AtomicU64>,
    /// This session's share of the hub-wide budget.
    _permit: BudgetPermit,
    _held: HeldSession,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
    }
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
    /// This table's part of `stats.sessions`.
    sessions: UdpSessionCount,
    /// This edge session's holdings of the hub-wide budgets.
    holding: Arc<Holding>,
    epoch: Instant,
}

impl HubUdp {
    pub(crate) fn new(
        context: Arc<ForwardContext>,
        idle: Duration,
        tunnel: Tunnel,
        stats: Arc<UdpStats>,
        holding: Arc<Holding>,
    ) -> Self {
        let limits = edge_cap(&stats);
        Self {
            table: SessionTable::new(idle, limits),
            mode: context.settings.udp_proxy_header,
            context,
            tunnel,
            sessions: UdpSessionCount::new(stats.clone()),
            stats,
            holding,
            epoch: Instant::now(),
        }
    }

    /// Handles one message from the edge.
    pub(crate) async fn handle_from_edge(&mut self, message: UdpMessage) {
        match message {
            UdpMessage::Open { session, header } => self.open(session, header).await,
            UdpMessage::Data { session, payload } => self.data(session, &payload),
            UdpMessage::Close { session } => {
                drop(self.table.remove(session));
                self.sessions.set(self.table.len());
            }
        }
    }

    async fn open(&mut self, session: u32, header: Bytes) {
        let Some(addresses) = datagram_addresses(&header) else {
            limited_warn!(
                self.context.warnings,
                edge_id = %self.context.edge_id,
                session,
                "UDP_OPEN payload is not one PROXY v2 DGRAM address header; refused"
            );
            let _ = self.tunnel.send_udp(UdpMessage::Close { session });
            return;
        };
        let grant = &self.context.grant;
        if !grant.source_allowed(&self.context.edge_id, &addresses) {
            let _ = self.tunnel.send_udp(UdpMessage::Close { session });
            return;
        }
        let Some(route) = grant.route(
            &self.context.edge_id,
            PortProtocol::Udp,
            addresses.destination.port(),
        ) else {
            let _ = self.tunnel.send_udp(UdpMessage::Close { session });
            return;
        };
        let port = route.target_port;
        let header = choice::udp_has_header(
            route
                .proxy_protocol
                .or(self.context.settings.proxy_protocol),
        )
        .then_some(header);
        // A replaced session gives its budget back before the new one takes its own.
        drop(self.table.remove(session));
        self.apply_edge_cap();
        let Some(permit) = self.take_budget().await else {
            tracing::debug!(
                session,
                "UDP session refused: the hub's session cap is reached"
            );
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            let _ = self.tunnel.send_udp(UdpMessage::Close { session });
            return;
        };
        let socket = match connect(&self.context.settings.target_host, port).await {
            Ok(socket) => Arc::new(socket),
            Err(error) => {
                limited_warn!(self.context.warnings, edge_id = %self.context.edge_id, session, port, %error, "cannot open a UDP socket to the target");
                let _ = self.tunnel.send_udp(UdpMessage::Close { session });
                return;
            }
        };
        let last_reply_ms = Arc::new(AtomicU64::new(0));
        let reader = self
            .context
            .tasks
            .spawn(read_replies(
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
            _permit: permit,
            _held: self.holding.hold_session(),
        };
        let (_, evicted) = self.table.insert(session, session, Instant::now(), value);
        self.close_evicted(evicted);
        self.sessions.set(self.table.len());
    }

    /// Applies the cap the hub keeps for this edge when it changed (allowed edges updated).
    fn apply_edge_cap(&mut self) {
        let limits = edge_cap(&self.stats);
        if limits != self.table.limits() {
            let evicted = self.table.set_limits(limits);
            self.close_evicted(evicted);
        }
    }

    /// A share of the hub-wide budget: a free one; or, when the budget is full and this edge
    /// within its fair share, one another edge over its share gives back; or the one of this
    /// edge's least recently used session, closed for it. An edge under pressure thus recycles
    /// its own sessions and takes other edges' only while they hold more than their share.
    async fn take_budget(&mut self) -> Option<BudgetPermit> {
        let context = self.context.clone();
        let settings = &context.settings;
        let reclaim = |full| {
            let (budget, capacity) = match full {
                Full::Own => (Budget::Udp, settings.udp_budget.capacity()),
                Full::Outer => (Budget::Forwarded, settings.forwarding_budget.capacity()),
            };
            settings.holders.reclaim(&self.holding, budget, capacity)
        };
        if let Some(permit) = settings
            .udp_budget
            .take_fairly(RECLAIM_PATIENCE, reclaim)
            .await
        {
            return Some(permit);
        }
        self.give_back(1);
        settings.udp_budget.try_take()
    }

    /// Closes up to `count` least recently used sessions: their shares go to edges within their
    /// fair share that wait for one.
    pub(crate) fn give_back(&mut self, count: usize) {
        let evicted = std::iter::from_fn(|| self.table.pop_lru())
            .take(count)
            .map(|(id, value)| Evicted {
                id,
                value,
                reason: Eviction::Capacity,
            })
            .collect();
        self.close_evicted(evicted);
    }

    /// Closes sessions the table displaced, on both sides.
    fn close_evicted(&mut self, evicted: Vec<Evicted<Session>>) {
        for Evicted { id, value, reason } in evicted {
            drop(value);
            self.stats.evicted(reason);
            let _ = self.tunnel.send_udp(UdpMessage::Close { session: id });
        }
        self.sessions.set(self.table.len());
    }
    fn data(&mut self, session: u32, payload: &[u8]) {
        let mode = self.mode;
        let Some(entry) = self.table.touch(session, Instant::now()) else {
            // Unknown (expired, or its open was lost): tell the edge so it re-opens.
            self.stats.drop_one();
            let _ = self.tunnel.send_udp(UdpMessage::Close { session });
            return;
        };
        let header = entry
            .header
            .as_ref()
            .filter(|_| mode == UdpProxyHeaderMode::Every || !entry.header_sent);
        let sent = match header {
            Some(header) => {
                let mut datagram = BytesMut::with_capacity(header.len() + payload.len());
                datagram.extend_from_slice(header);
                datagram.extend_from_slice(payload);
                entry.socket.try_send(&datagram)
            }
            None => entry.socket.try_send(payload),
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
            drop(closed);
            let _ = self.tunnel.send_udp(UdpMessage::Close { session });
        }
        self.sessions.set(self.table.len());
    }

    /// Ends every session (the tunnel is gone).
    pub(crate) fn close_all(&mut self) {
        drop(self.table.drain());
        self.sessions.set(0);
    }
}

/// The cap the hub keeps for this edge: its `maxUdpSessions` as the actor last set it.
fn edge_cap(stats: &UdpStats) -> TableLimits {
    let max = match UdpStats::get(&stats.max_sessions) {
        0 => u64::from(EdgeLimitSettings::default().max_udp_sessions),
        set => set,
    };
    let max_sessions = usize::try_from(max).unwrap_or(usize::MAX);
    TableLimits {
        max_sessions,
        max_per_source: max_sessions,
    }
}

/// The addresses of a session: its PROXY v2 DGRAM header, which must
/// be the whole `UDP_OPEN` payload. `None` for anything else.
fn datagram_addresses(header: &[u8]) -> Option<ProxyHeader> {
    match v2::parse(header)? {
        (addresses, ProxyTransport::Datagram) => Some(addresses),
        (_, ProxyTransport::Stream) => None,
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

/// Replies from the target go back through the tunnel; drops are counted. Waits for
/// readiness without a buffer and receives into the thread's [`SCRATCH`].
async fn read_replies(
    socket: Arc<UdpSocket>,
    session: u32,
    tunnel: Tunnel,
    stats: Arc<UdpStats>,
    last_reply_ms: Arc<AtomicU64>,
    epoch: Instant,
) {
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        let payload = match receive(&socket) {
            Ok(payload) => payload,
            Err(error) => match error.kind() {
                std::io::ErrorKind::WouldBlock => continue,
                // ICMP port unreachable and friends: keep the session; the target may come back.
                std::io::ErrorKind::ConnectionRefused => continue,
                _ => return,
            },
        };
        let elapsed = u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        last_reply_ms.store(elapsed.max(1), Ordering::Relaxed);
        match tunnel.send_udp(UdpMessage::Data { session, payload }) {
            Ok(()) => {
                stats.datagrams_out.fetch_add(1, Ordering::Relaxed);
            }
            Err(crate::transport::datagram::UdpSendError::Closed) => return,
            Err(crate::transport::datagram::UdpSendError::Full) => stats.drop_one(),
        }
    }
}

/// One datagram from a ready socket, copied out of the thread's scratch buffer.
fn receive(socket: &UdpSocket) -> std::io::Result<Bytes> {
    SCRATCH.with_borrow_mut(|buffer| {
        let len = socket.try_recv(buffer)?;
        Ok(Bytes::copy_from_slice(
            buffer.get(..len).unwrap_or_default(),
        ))
    })
}
